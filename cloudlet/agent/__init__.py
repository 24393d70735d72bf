"""``cloudlet lb-agent``: the imperative shell that runs on an LB VM.

It reads the LB document (:mod:`cloudlet.lb.document`) from a source (a file
on ``local``, OpenStack's metadata, vSphere's guestinfo), renders it with the
pure :mod:`cloudlet.lb` functions, validates, (re)loads haproxy, nginx and
keepalived, and reports what it runs (:mod:`cloudlet.agent.report`). It
needs no credentials: everything it needs is in the document.
"""
