/*
 * Xen's libxencall.so.1 with every function a stub: the emulator has no hypervisor to
 * call.  Like Xen's libxenctrl, ours depends on it, and Xen's libxenguest finds xencall1
 * only through that dependency; so programs linked against either load, and a call ends
 * the program with one line naming the function (unemulated.h).
 */
#include "unemulated.h"

#define UNEMULATED_LIBRARY "libxencall.so.1 makes no hypercalls"

UNEMULATED(xencall0)
UNEMULATED(xencall1)
UNEMULATED(xencall2)
UNEMULATED(xencall2L)
UNEMULATED(xencall3)
UNEMULATED(xencall4)
UNEMULATED(xencall5)
UNEMULATED(xencall_alloc_buffer)
UNEMULATED(xencall_alloc_buffer_pages)
UNEMULATED(xencall_buffers_never_fault)
UNEMULATED(xencall_close)
UNEMULATED(xencall_fd)
UNEMULATED(xencall_free_buffer)
UNEMULATED(xencall_free_buffer_pages)
UNEMULATED(xencall_open)
