/* N-API plumbing shared by the addon's C files (dstm_native.c: TUN and raw sockets; udp.c: the RPC server's UDP):
 * argument checks that throw a TypeError, and the one way a libuv poll callback calls back into JavaScript. */
#ifndef DSTM_NAPI_UTIL_H
#define DSTM_NAPI_UTIL_H
#include <node_api.h>
#include <stdint.h>

#define NAPI_CHECK(call)                                                                                         \
  do {                                                                                                           \
    if ((call) != napi_ok) {                                                                                     \
      napi_throw_error(env, NULL, "dstm_native: N-API call failed: " #call);                                    \
      return NULL;                                                                                               \
    }                                                                                                            \
  } while (0)

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

/** Calls `callback(arg)` from a libuv callback, in `async`'s context; an exception it throws is fatal, as Node's own are. */
static inline void napi_util_call(napi_env env, napi_ref callback, napi_async_context async, int64_t arg) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[1], result;
  napi_get_reference_value(env, callback, &cb);
  napi_get_global(env, &recv);  // napi_make_callback needs an object receiver
  napi_create_int64(env, arg, &argv[0]);
  if (napi_make_callback(env, async, recv, cb, 1, argv, &result) == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
  napi_close_handle_scope(env, scope);
}
#endif
