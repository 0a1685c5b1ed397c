/* N-API plumbing shared by the addon's C files (dstm_native.c: TUN and raw sockets; udp.c: the RPC server's UDP):
 * argument checks that throw a TypeError, and the one kind of fd watcher whose events call back into JavaScript. */
#ifndef DSTM_NAPI_UTIL_H
#define DSTM_NAPI_UTIL_H
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#define NAPI_CHECK(call)                                                                                         \
  do {                                                                                                           \
    if ((call) != napi_ok) {                                                                                     \
      napi_throw_error(env, NULL, "dstm_native: N-API call failed: " #call);                                    \
      return NULL;                                                                                               \
    }                                                                                                            \
  } while (0)

/** An entry of the property table a module's init defines: JavaScript name, C function. */
#define NAPI_METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

static inline int napi_util_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "dstm_native: missing arguments");
    return 0;
  }
  return 1;
}

static inline int napi_util_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "dstm_native: expected a number");
    return 0;
  }
  return 1;
}

/** Data pointer and byte length of a TypedArray argument. */
static inline int napi_util_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  napi_typedarray_type type;
  size_t n, off;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, &n, data, &ab, &off) != napi_ok) {
    napi_throw_type_error(env, NULL, "dstm_native: expected a TypedArray");
    return 0;
  }
  *len = n * ((type == napi_uint32_array || type == napi_int32_array || type == napi_float32_array) ? 4 : 1);
  return 1;
}

/**
 * Throws an Error like Node's system errors: code 'EADDRINUSE' etc., errno (negative, as Node's), syscall, and the
 * message "syscall CODE detail" (dgram's form for bind errors, which the batched UDP socket must match).
 */
static inline napi_value napi_util_throw_sys(napi_env env, const char *syscall, int err, const char *detail) {
  const char *code = uv_err_name(uv_translate_sys_error(err));
  char msg[320];
  snprintf(msg, sizeof msg, "%s %s%s%s", syscall, code, detail ? " " : "", detail ? detail : "");
  napi_value codev, text, error, errnov, sysv;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &codev);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, codev, text, &error);
  napi_create_int32(env, -err, &errnov);  // negative, as Node's uv errors are
  napi_set_named_property(env, error, "errno", errnov);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sysv);
  napi_set_named_property(env, error, "syscall", sysv);
  napi_throw(env, error);
  return NULL;
}

#define JS_POLLER_MAX_ARRAYS 3

/**
 * An fd watched by libuv whose events call back into JavaScript. It keeps the JavaScript callback alive, and the
 * TypedArrays that C reads and writes into while it watches. It is the first member of its owner, so the uv
 * handle's address is the owner's, and the owner is freed by the close callback given to js_poller_start.
 */
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref arrays[JS_POLLER_MAX_ARRAYS];
  int n_arrays;
  napi_async_context async;
} js_poller;

static inline void js_poller_unref(js_poller *p) {
  napi_delete_reference(p->env, p->callback);
  for (int i = 0; i < p->n_arrays; i++) napi_delete_reference(p->env, p->arrays[i]);
  napi_async_destroy(p->env, p->async);
}

/**
 * Watches `fd` for `events`, calling `on_event`; `name` is the async resource's (as async_hooks see it). On failure
 * it throws, frees the owner through `on_close` and returns 0.
 */
static inline int js_poller_start(napi_env env, js_poller *p, int fd, int events, uv_poll_cb on_event, uv_close_cb on_close, const char *name,
                                  napi_value callback, const napi_value *arrays, int n_arrays) {
  uv_loop_t *loop;
  napi_value resource, resource_name;
  p->env = env;
  if (n_arrays > JS_POLLER_MAX_ARRAYS || napi_get_uv_event_loop(env, &loop) != napi_ok || napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_async_init(env, resource, resource_name, &p->async) != napi_ok) {
    napi_throw_error(env, NULL, "dstm_native: cannot set up the callback");
    on_close((uv_handle_t *)&p->poll);
    return 0;
  }
  napi_create_reference(env, callback, 1, &p->callback);
  for (p->n_arrays = 0; p->n_arrays < n_arrays; p->n_arrays++) napi_create_reference(env, arrays[p->n_arrays], 1, &p->arrays[p->n_arrays]);
  int rc = uv_poll_init(loop, &p->poll, fd);
  if (rc != 0) {
    js_poller_unref(p);
    on_close((uv_handle_t *)&p->poll);  // not in the loop: nothing to close
  } else if ((rc = uv_poll_start(&p->poll, events, on_event)) != 0) {
    js_poller_unref(p);
    uv_close((uv_handle_t *)&p->poll, on_close);
  }
  if (rc != 0) napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
  return rc == 0;
}

/** Stops watching and lets go of the callback and the arrays; the owner is freed once libuv has closed the handle. */
static inline void js_poller_stop(js_poller *p, uv_close_cb on_close) {
  uv_poll_stop(&p->poll);
  js_poller_unref(p);
  uv_close((uv_handle_t *)&p->poll, on_close);
}

/** Calls the callback with `arg` from a libuv callback; an exception it throws is fatal, as Node's own are. */
static inline void js_poller_call(js_poller *p, int64_t arg) {
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[1], result;
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_global(env, &recv);  // napi_make_callback needs an object receiver
  napi_create_int64(env, arg, &argv[0]);
  if (napi_make_callback(env, p->async, recv, cb, 1, argv, &result) == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
  napi_close_handle_scope(env, scope);
}
#endif
