"""Image backends: provider adapters, the standard and polling workers, storage, the sim.

Entry points for the runner:
- ``workers.providers``: ``make_session``, ``ProviderConfig``, ``build_provider``,
  ``RequestRetryPolicy``
- ``workers.standard.run_standard`` and ``workers.polling.run_polling`` / ``PollSettings``
- ``workers.storage.ImageStore``
- ``workers.sim``: ``SimConfig``, ``build_app``, ``serve``, ``run``, ``running``
"""
