"""Runtimes: where workspaces and experiment runs execute.

:mod:`.base` is the contract the service layer uses (and nothing else); :mod:`.local`,
:mod:`.docker` and :mod:`.nomad` implement it. Nothing is imported here: the agent imports only
the runtime its configuration names.
"""
