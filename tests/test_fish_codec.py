"""The codec: golden codes and audio from fishaudio's own code, a tiny codec written by the tests,
encode/decode lengths, streaming decode against one-shot decode, malformed files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

torch = pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")

from fishvoice.fish.codec import CodecConfig, DecodeState, load_codec  # noqa: E402
from fishvoice.fish.errors import CheckpointError  # noqa: E402
from fishvoice.fish.streaming import decode_streaming  # noqa: E402

from .fish_tiny import write_codec  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "codec"


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "golden.json").read_text())


@pytest.fixture(scope="module")
def golden_codec():
    return load_codec(GOLDEN / "codec.pth", CodecConfig.from_json(GOLDEN / "codec.json"))


def test_golden_codes_match_the_reference_exactly(golden, golden_codec):
    codes = golden_codec.encode(torch.tensor(golden["input_audio"]))
    assert codes.tolist() == golden["codes"]
    assert codes.shape[1] == golden["code_lengths"][0] == math.ceil(len(golden["input_audio"]) / golden["frame_length"])
    assert (golden_codec.config.hop_length, golden_codec.config.frame_length) == (
        golden["hop_length"],
        golden["frame_length"],
    )


def test_golden_decoded_audio_matches_the_reference(golden, golden_codec):
    audio = golden_codec.decode(torch.tensor(golden["codes"]))
    torch.testing.assert_close(
        audio.double(), torch.tensor(golden["decoded_audio"], dtype=torch.float64), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("wrapped", [False, True])
def test_tiny_codec_loads_and_round_trips_length_and_rate(tmp_path, wrapped):
    written = write_codec(tmp_path, seed=1, wrapped=wrapped)
    codec = load_codec(tmp_path / "codec.pth", CodecConfig.from_json(tmp_path / "codec.json"))
    audio = torch.sin(torch.arange(30_000) / 20.0) * 0.5
    codes = codec.encode(audio)
    assert codes.shape == (4, math.ceil(30_000 / 2048)) and int(codes.max()) < 32
    assert torch.equal(codes, written.encode(audio))  # the folded weights are the written model's
    decoded = codec.decode(codes)
    assert decoded.shape == (codes.shape[1] * 2048,) and codec.config.sample_rate == 44100
    assert decoded.abs().max() <= 1.0


@pytest.mark.parametrize(("layers", "window"), [(1, 16), (4, 16)])
def test_streaming_decode_matches_one_shot_decode(tmp_path, layers, window):
    # Stacked windowed layers reach back layers x window frames: re-decoding window + 8 frames of left
    # context missed by 3.9e-4 on (4, 16); carrying each layer's state is exact.
    write_codec(tmp_path, seed=2, quantizer_layers=layers, window=window)
    codec = load_codec(tmp_path / "codec.pth", CodecConfig.from_json(tmp_path / "codec.json"))
    torch.manual_seed(0)
    codes = torch.randint(0, 32, (4, 70))
    whole = codec.decode(codes)
    chunks = list(decode_streaming(codec, codes, first_frames=5, chunk_frames=12))
    assert len(chunks[0]) == 5 * 2048 and len(chunks) == 1 + math.ceil(65 / 12)
    joined = torch.cat(chunks)
    assert joined.shape == whole.shape
    torch.testing.assert_close(joined, whole, atol=1e-4, rtol=0)  # every sample within 1e-4 of the one-shot decode
    frame_by_frame = torch.cat(list(decode_streaming(codec, codes, first_frames=1, chunk_frames=1)))
    torch.testing.assert_close(frame_by_frame, whole, atol=1e-4, rtol=0)


def test_streams_at_different_points_decode_together(tmp_path):
    write_codec(tmp_path, seed=3, quantizer_layers=2, window=4)
    codec = load_codec(tmp_path / "codec.pth", CodecConfig.from_json(tmp_path / "codec.json"))
    torch.manual_seed(1)
    first, second = torch.randint(0, 32, (4, 30)), torch.randint(0, 32, (4, 30))
    ahead = codec.start_decoding()
    head = codec.decode_next(first[None, :, :10], ahead)[0]
    both = DecodeState.stack([ahead, codec.start_decoding()])  # one stream 10 frames in, one new
    audio = codec.decode_next(torch.stack([first[:, 10:20], second[:, :10]]), both)
    torch.testing.assert_close(torch.cat([head, audio[0]]), codec.decode(first[:, :20]), atol=1e-4, rtol=0)
    torch.testing.assert_close(audio[1], codec.decode(second[:, :10]), atol=1e-4, rtol=0)
    later = both.split()[1]
    torch.testing.assert_close(
        codec.decode_next(second[None, :, 10:], later)[0], codec.decode(second)[10 * 2048 :], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing", "codec.pth: missing"),
        ("garbage", "not readable"),
        ("shape", "has shape"),
        ("drop", "missing weights"),
    ],
)
def test_malformed_codec_files_fail_with_the_file_named(tmp_path, change, words):
    write_codec(tmp_path)
    pth = tmp_path / "codec.pth"
    if change == "missing":
        pth.unlink()
    elif change == "garbage":
        pth.write_bytes(b"not a checkpoint")
    else:
        state = torch.load(pth)
        if change == "shape":
            state["quantizer.quantizer.quantizers.0.codebook.weight"] = torch.zeros(33, 4)
        else:
            del state["decoder.model.5.alpha"]
        torch.save(state, pth)
    with pytest.raises(CheckpointError) as caught:
        load_codec(pth, CodecConfig.from_json(tmp_path / "codec.json"))
    assert words in str(caught.value)


def test_a_codec_json_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "codec.json").write_text(json.dumps({"sample_rate": 44100}))
    with pytest.raises(CheckpointError, match="not a codec configuration"):
        CodecConfig.from_json(tmp_path / "codec.json")
