"""A store with three HTTP backends, and the ActivityId that ties their logs together.

Run it from the repository root::

    python -m examples.http_backends

The frontend routes each interface to its own backend, and one backend calls
another::

    frontend --CatalogRead--> A: catalog
             --Orders-------> B: orders --Pricing--> C: pricing

Every user action on the frontend gets an ActivityId; each call carries it in
its HTTP headers, and each server makes it current while it serves the call,
so it is on the log lines of all four tiers, and on B's call to C.

* `interface`: the shared code, the three interfaces, their types and errors;
* `catalog`, `orders`, `pricing`: backends A, B and C;
* `frontend`: the user actions, which see nothing but the interfaces;
* `__main__`: serves the three backends, runs the frontend against them, and
  configures logging so each line shows its tier and its ActivityId.
"""
