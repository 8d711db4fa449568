"""The browser editor's built bundle (``dist/``), built from ``web/src`` by ``web/build.mjs``."""
