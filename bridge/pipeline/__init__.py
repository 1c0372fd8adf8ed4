"""The pipeline's stages, one module each. A stage is given what it works with (the state
store, the spool, its settings section, the peer it talks to, as a client or a function) and
has ``once()``: claim what is ready, do it, record the outcome; True when something moved. The
runtime (``bridge/runtime/worker.py``) builds the stages and runs each in its loop."""
