"""virtlife's REST API and web UI, served by ``virtlife serve`` (FastAPI + uvicorn).

A front end like the CLI: every route is a thin call into the same service layer
(``services``), with the same messages. ``app.create_app`` builds the application;
``auth`` checks bearer tokens; ``problems`` turns virtlife errors into JSON with a
stable code; ``hub`` pushes events to stream clients. Nothing here imports libvirt.
"""
