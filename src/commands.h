/* commands: the sub-commands main() dispatches to, one file each (cmd_*.c). Each
 * takes the arguments after its name and returns the process exit code
 * (0 ok, 1 failure, 2 usage error). */
#ifndef LUAHOOK_COMMANDS_H
#define LUAHOOK_COMMANDS_H

int cmd_replay(int argc, char **argv);
int cmd_send(int argc, char **argv);

#endif
