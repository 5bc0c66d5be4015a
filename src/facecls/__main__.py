from facecls.cli import main

main()
