/* bind_log: log.<level>(...) writes one record. The arguments are turned into
 * text with tostring and joined by spaces; a table as the last argument gives
 * key/value fields instead. Inside a handler the record carries the event id. */
#include "bind_log.h"
#include "log.h"
#include "script.h"
#include "task.h"

#include <lauxlib.h>

#define MAX_FIELDS 32

static int l_log(lua_State *L) {
  log_level lv = (log_level)lua_tointeger(L, lua_upvalueindex(1));
  if (!log_enabled(lv)) return 0;
  int n = lua_gettop(L);
  int fields = n > 0 && lua_type(L, n) == LUA_TTABLE ? n : 0;
  int nmsg = fields ? n - 1 : n;

  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= nmsg; i++) {
    if (i > 1) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  int msg_idx = lua_gettop(L);

  log_kv kv[MAX_FIELDS + 1];
  size_t nkv = 0;
  task_t *t = task_from(L);
  if (t && task_label(t)) kv[nkv++] = (log_kv){"event", task_label(t)};
  if (fields) {
    lua_pushnil(L);
    while (nkv < MAX_FIELDS && lua_next(L, fields)) {
      /* key and value as strings, both kept on the stack until the write */
      luaL_checkstack(L, 4, "too many log fields");
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 1);
        continue;
      }
      const char *v = luaL_tolstring(L, -1, NULL);
      lua_pushvalue(L, -3); /* the key, for the next lua_next */
      kv[nkv++] = (log_kv){lua_tostring(L, -4), v};
      /* stack: ... key value vstr key; keep key/value/vstr, continue from key */
    }
  }
  log_write(lv, lua_tostring(L, msg_idx), kv, nkv);
  return 0;
}

int bind_log_open(lua_State *L) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 4; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, l_log, 1);
    lua_setfield(L, -2, names[i]);
  }
  return 1;
}
