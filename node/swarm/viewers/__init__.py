"""The viewer swarm: people watching a clip trade its pieces over WebRTC (the protocol: ``protocol.py``).

Importing the package costs nothing: the pure parts (``protocol``, ``hub``,
``picker``, ``clip``, ``report``) need msgpack only, and aiortc, httpx and
trio-websocket load with the modules that use them (``rtc_bridge``,
``viewer``, ``watch``, ``seeder``).
"""
