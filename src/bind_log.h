/* bind_log: the `log` module scripts use: log.debug/info/warn/error(...). */
#ifndef LUAHOOK_BIND_LOG_H
#define LUAHOOK_BIND_LOG_H

#include <lua.h>

int bind_log_open(lua_State *L);

#endif
