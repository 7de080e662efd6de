"""The PDS paper's methods on the integration layer: ``pds`` and ``pds-refine``, registered with nerfstudio."""
