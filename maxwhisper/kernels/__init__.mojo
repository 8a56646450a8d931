# Custom MAX kernels for maxwhisper. See gemv_nt.mojo.
