// The microphone as 16-bit PCM, mono, at 24 kHz, in chunks of 80 ms: an AudioWorklet processor.
// The page runs it in a 24 kHz AudioContext where the browser allows one (the browser resamples the
// microphone); in a context at another rate it resamples here, linearly. A "flush" message sends what
// is left as a short last chunk, marked `last`.

const RATE = 24000;
const CHUNK = 1920; // 80 ms at 24 kHz

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE; // input samples per output sample
    this.position = 0; // where the next output sample lies, in input samples from this block's start
    this.previous = 0; // the last input sample of the block before, at position -1
    this.chunk = new Int16Array(CHUNK);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.send(true);
    };
  }

  send(last) {
    const samples = this.chunk.slice(0, this.filled);
    this.port.postMessage({ pcm: samples.buffer, last }, [samples.buffer]);
    this.filled = 0;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === CHUNK) this.send(false);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const length = channels[0].length;
    const mono = new Float32Array(length);
    for (const channel of channels) {
      for (let i = 0; i < length; i++) mono[i] += channel[i] / channels.length;
    }
    if (this.step === 1) {
      for (let i = 0; i < length; i++) this.push(mono[i]);
      return true;
    }
    // Linear interpolation between the samples either side of each output position.
    while (this.position < length - 1) {
      const index = Math.floor(this.position);
      const fraction = this.position - index;
      const before = index < 0 ? this.previous : mono[index];
      this.push(before + (mono[index + 1] - before) * fraction);
      this.position += this.step;
    }
    this.position -= length;
    this.previous = mono[length - 1];
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
