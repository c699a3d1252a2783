from robustlab.run import main

main()
