"""RunPod's entry point: `python handler.py` starts the fishvoice worker (RunPod's flags apply)."""

from fishvoice.worker import main

if __name__ == "__main__":
    main()
