"""vidlat benchmarks: one script per benchmark, each run as a fresh process by `vidlat bench`."""
