"""The admin side of ishowttsd: the Unix-socket server, its client and ``ishowtts-admin``.

Kept empty on purpose: ``ishowtts-admin`` imports ``ishowttsd.admin.cli``, and anything
imported here (aiohttp for the server, say) would slow every CLI call down.
"""
