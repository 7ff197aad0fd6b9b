"""RobotWorld: the iTwin.js seed app's read interface, served and called with tether.

Run it from the repository root::

    python -m examples.robot_world            # backend on the frontend's Trio loop
    python -m examples.robot_world --thread   # backend in its own thread and loop

The modules follow the three places code lives in an RPC application:

* `interface`: the shared code both tiers import, the interface and its types;
* `backend`: an in-memory RobotWorld engine and the impl that serves it;
* `frontend`: the user actions, which see nothing but the interface;
* `__main__`: wires them together over tether's in-process transport and
  configures logging so both tiers' lines show the ActivityId of each action.
"""
