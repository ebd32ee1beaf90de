/* LD_PRELOAD shim for running wsdemo under valgrind 3.19: dispatch_main()
 * parks the main thread in pthread_exit + sigsuspend, which valgrind 3.19
 * crashes on (SIGSEGV inside valgrind right after start). The server's work
 * is all on the engine's loop threads, so the main thread just sleeps here.
 * Signal sources no longer run: stop the server with SIGKILL. */
#include <unistd.h>
void dispatch_main(void) {
    for (;;) pause();
}
