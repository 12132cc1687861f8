"""The internal layer of :mod:`advbook`: one home for every helper the subpackages share.

* :mod:`.types` — the callable types (``Attack``, ``LossFn``) and tensor aliases;
* :mod:`.checks` — argument checks with messages that name the argument and the expectation;
* :mod:`.guard` — context managers that run a model and leave it exactly as it was;
* :mod:`.random` — seeded draws that give the same numbers on every device, and fresh seeds;
* :mod:`.devices` — where a model lives.

Nothing here imports any other part of :mod:`advbook`; every subpackage may import from here
(see ``ARCHITECTURE.md``).
"""
