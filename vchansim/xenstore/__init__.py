"""XenStore for vchansim: the wire codec, an emulated xenstored and a small client.

- :mod:`.wire` -- message framing, types, error names, permission strings (no I/O);
- :mod:`.store` -- the emulated daemon, sans-IO: :class:`Xenstored` and :class:`XsConnection`;
- :mod:`.server` -- :class:`XenstoreService`, the store on one UNIX socket per domain;
- :mod:`.client` -- :class:`XsClient`, a synchronous client for a socket or xenbus device.

Import the module you need: an endpoint uses the codec and the client, and loading the
package must not load the daemon with them.
"""
