/* commands: the sub-commands main() dispatches to, one file each (cmd_*.c). Each
 * takes the arguments after its name and returns the process exit code
 * (0 ok, 1 failure, 2 usage error). */
#ifndef LUAHOOK_COMMANDS_H
#define LUAHOOK_COMMANDS_H

#include "config.h"
#include "script.h"

int cmd_replay(int argc, char **argv);
int cmd_send(int argc, char **argv);

/* The script of a parsed configuration (run, check and replay share it); NULL with
 * a message on stderr when the Lua state cannot be made. */
script_t *open_script(const config *c, uv_loop_t *loop);

#endif
