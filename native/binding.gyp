{
  "targets": [
    {
      "target_name": "podflow_bpf",
      "sources": ["src/bpf_map.c", "src/netlink.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "conditions": [
        ["OS!='linux'", { "sources!": ["src/bpf_map.c", "src/netlink.c"], "sources": ["src/unsupported.c"] }]
      ]
    }
  ]
}
