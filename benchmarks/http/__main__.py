from benchmarks.http.harness import main

main()
