"""Shell and log access to VMs that accept no inbound connection, through a
relay both sides dial out to (the architecture's EdgeTurn): ``protocol``
(the wire), ``server`` (``cloudlet relay``), ``site`` (the site side),
``client`` (``cloudlet shell``/``logs``), ``tokens`` (who may open what)."""
