"""IPC editor: a frontend paired with its own backend, the iTwin.js IpcInterface way.

Run it from the repository root::

    python -m examples.ipc_editor            # backend on the frontend's Trio loop
    python -m examples.ipc_editor --thread   # backend in its own thread and loop

Where RobotWorld (`examples.robot_world`) shows RPC, loosely coupled calls that
each carry their whole context, this example shows IPC: one frontend and one
backend paired for the life of a session. The backend keeps an open document
per session, pushes notifications to its frontend, and even calls back into
it.

* `interface`: the shared code, the channels and their types;
* `backend`: the in-memory document and the handler that edits it;
* `frontend`: the user actions, a view that shows the notifications, and the
  dialog the backend calls;
* `__main__`: configures logging so both tiers' lines show each action's
  ActivityId, and runs the frontend against the backend in-process.
"""
