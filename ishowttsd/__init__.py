"""ishowttsd: keeps F5-TTS warm on the GPU and serves speech over HTTP."""

__version__ = "0.1.0"
