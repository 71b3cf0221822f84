# fishvoice RunPod worker for GPUs: the Fish Speech engine (torch, CUDA) and llama.cpp built with CUDA.
# Model files come from a mounted network volume (/runpod-volume) or are baked in at build time with
#   docker build --build-arg FISH_CHECKPOINT=fishaudio/openaudio-s1-mini --secret id=hf_token,env=HF_TOKEN .
# Nothing is fetched per job.
FROM nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN pip install --upgrade pip
RUN pip install torch --index-url https://download.pytorch.org/whl/cu126
RUN CMAKE_ARGS="-DGGML_CUDA=on" pip install "llama-cpp-python>=0.3.2"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[fish]"
COPY handler.py test_input.json ./

ARG FISH_CHECKPOINT=
RUN --mount=type=secret,id=hf_token,required=false if [ -n "$FISH_CHECKPOINT" ]; then \
      HF_TOKEN=$(cat /run/secrets/hf_token 2>/dev/null) python -c "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_dir='/models/fish')" "$FISH_CHECKPOINT"; \
    fi

ENV FISHVOICE_VOICE=fish \
    FISHVOICE_FISH_CHECKPOINT=/runpod-volume/models/openaudio-s1-mini \
    FISHVOICE_LLM_GPU_LAYERS=-1 \
    FISHVOICE_STORE=/runpod-volume/fishvoice/conversations.sqlite3 \
    FISHVOICE_FISH_COMPILE_CACHE=/runpod-volume/fishvoice/compile-cache \
    HF_HUB_OFFLINE=1
CMD ["python", "-u", "handler.py"]
