/*
 * Xen's libxenhypfs.so.1 with every function a stub: the emulator has no hypervisor file
 * system.  Xen's libxenlight (so xl) and xenhypfs link against it; they load, and a call
 * ends the program with one line naming the function (unemulated.h).
 */
#include "unemulated.h"

#define UNEMULATED_LIBRARY "libxenhypfs.so.1 has no hypervisor file system"

UNEMULATED(xenhypfs_close)
UNEMULATED(xenhypfs_open)
UNEMULATED(xenhypfs_read)
UNEMULATED(xenhypfs_read_raw)
UNEMULATED(xenhypfs_readdir)
UNEMULATED(xenhypfs_write)
