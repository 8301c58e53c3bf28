"""The live web dashboard ``shoal serve`` shows at ``/`` (see :mod:`.dashboard`)."""
