{
  "targets": [
    {
      "target_name": "dstm_native",
      "sources": ["native/dstm_native.c", "native/sd_notify.c", "native/udp.c", "native/uring.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
