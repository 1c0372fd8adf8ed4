"""The runtime: the processes and threads of ``bridge serve`` and ``bridge worker``, and the
wiring that builds the object graph (store, spool, peers' sessions, stages, listener, web app).
It is the only layer that constructs collaborators; everything below is given them."""
