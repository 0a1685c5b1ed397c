// sd_notify(3) for the dstm daemons: one datagram to the AF_UNIX socket systemd names in NOTIFY_SOCKET (Node has
// no AF_UNIX datagram sockets). A leading '@' names an abstract socket. JS decides whether to call it at all
// (src/lib/sd-notify.ts: no NOTIFY_SOCKET, nothing to do).
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static napi_value fail(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "sd_notify: %s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

// sdNotify(socketPath: string, state: string): undefined; throws on a bad path or a failed send.
napi_value dstm_sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "sdNotify(socketPath, state)");
    return NULL;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t plen = 0, slen = 0;
  if (napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof sa.sun_path, &plen) != napi_ok) {
    napi_throw_type_error(env, NULL, "sdNotify: socketPath must be a string");
    return NULL;
  }
  if (plen < 2 || plen >= sizeof sa.sun_path - 1 || (sa.sun_path[0] != '/' && sa.sun_path[0] != '@')) {
    return fail(env, "NOTIFY_SOCKET is not an absolute path or @abstract name", EINVAL);
  }
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &slen) != napi_ok) {
    napi_throw_type_error(env, NULL, "sdNotify: state must be a string");
    return NULL;
  }
  char state[4096];
  if (slen >= sizeof state) return fail(env, "state too long", EMSGSIZE);
  napi_get_value_string_utf8(env, argv[1], state, sizeof state, &slen);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(env, "socket", errno);
  // an abstract name's length is exact (no terminating NUL); a path's includes its NUL
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (sa.sun_path[0] ? 1 : 0));
  ssize_t n;
  do n = sendto(fd, state, slen, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return fail(env, "sendto", err);
  return NULL;
}
