/* The one line, and exit status, of a call to a function the emulator does not provide
 * (unemulated.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

#include "unemulated.h"

void vchansim_unemulated(const char *function, const char *library)
{
    fflush(NULL);
    fprintf(stderr, "vchansim: %s is not emulated: vchansim's %s; run this program on Xen\n",
            function, library);
    _exit(127);
}
