from cloudlet.cmd.main import entry

entry()
