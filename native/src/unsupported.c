// Non-Linux builds: an empty module. native/index.ts refuses to load it and reports
// "not supported on this platform" before anything here would be called.
#include <node_api.h>

static napi_value init(napi_env env, napi_value exports) {
  (void)env;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
