{
  "targets": [
    {
      "target_name": "roomring_pipe",
      "sources": ["native/pipe.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "conditions": [["OS!='linux'", {"type": "none", "sources!": ["native/pipe.cc"]}]]
    }
  ]
}
