/*
 * Xen's libxenforeignmemory.so.1 with every function a stub: the emulator shares memory
 * between domains only through grants.  Like Xen's libxenctrl, ours depends on it, and
 * Xen's libxenguest finds xenforeignmemory_map only through that dependency; so programs
 * linked against either load, and a call ends the program with one line naming the
 * function (unemulated.h).
 */
#include "unemulated.h"

#define UNEMULATED_LIBRARY "libxenforeignmemory.so.1 maps no foreign memory"

UNEMULATED(xenforeignmemory_close)
UNEMULATED(xenforeignmemory_map)
UNEMULATED(xenforeignmemory_map2)
UNEMULATED(xenforeignmemory_map_resource)
UNEMULATED(xenforeignmemory_open)
UNEMULATED(xenforeignmemory_resource_size)
UNEMULATED(xenforeignmemory_restrict)
UNEMULATED(xenforeignmemory_unmap)
UNEMULATED(xenforeignmemory_unmap_resource)
