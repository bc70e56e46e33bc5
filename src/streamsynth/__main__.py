from streamsynth.cli.main import main

main()
