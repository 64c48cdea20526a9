"""Usage history and reports (docs/observe.md): the sampler and its events (:mod:`.service`),
the state gauges of ``/metrics`` (:mod:`.collector`), the history and report operations
(:mod:`.ops`), the documents and their rendering (:mod:`.report`, :mod:`.charts`), and the
``usage:`` and ``metrics:`` sections of agent.yaml (:mod:`.config`)."""
