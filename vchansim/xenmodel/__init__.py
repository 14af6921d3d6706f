"""Xen's grant-table and event-channel rules, written once and free of I/O.

The hub (:mod:`vchansim.hub`) and the in-process ``memory`` backend both emulate the
same hypervisor; they differ only in what a page is and how an event reaches a waiter.
So the rules -- which refs and port numbers a domain gets, who may map or bind what,
the per-domain limits, the errno each refusal carries -- live here, parameterised by a
*page allocator* (:mod:`.grants`) and a *doorbell* (:mod:`.events`), in the way
mirage/ocaml-vchan parameterises its ring by memory and events.  A refusal is a
:class:`vchansim.xen.RequestError` (errno and why); each user turns it into its own
reply or exception.
"""
