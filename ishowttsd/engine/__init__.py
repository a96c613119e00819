"""The synthesis engine: the only package that imports torch and f5_tts.

Importing this package itself is cheap; torch is imported by ``engine.f5`` and friends,
never by ``engine.spec``, which the config loader and the admin CLI use.
"""
