/*
 * Stubs for the functions of Xen's libraries that the emulator does not provide.
 *
 * They are exported all the same, with Xen's symbol versions, so that every program
 * linked against those libraries loads: Debian binds symbols at load time, and a missing
 * one would stop the program before main() with only the loader's terse message.
 * Calling one ends the program -- its C signature is unknown here, so no honest return
 * value exists -- with one line naming the function and what the library does provide,
 * and exit status 127, the loader's.
 *
 * A stub file defines UNEMULATED_LIBRARY (what the library provides, as a sentence that
 * starts with its soname) and then lists its functions with UNEMULATED(name).  Stub files
 * deliberately do not include Xen's headers: each stub stands for a function of a
 * different signature.
 */
#ifndef VCHANSIM_UNEMULATED_H
#define VCHANSIM_UNEMULATED_H

/* Print "vchansim: FUNCTION is not emulated: vchansim's LIBRARY; run this program on
 * Xen" and _exit(127). */
__attribute__((noreturn, visibility("hidden"))) void vchansim_unemulated(const char *function,
                                                                          const char *library);

#define UNEMULATED(name)                                                                   \
    void name(void);                                                                       \
    void name(void)                                                                        \
    {                                                                                      \
        vchansim_unemulated(#name, UNEMULATED_LIBRARY);                                    \
    }

#endif
