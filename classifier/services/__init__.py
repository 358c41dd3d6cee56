"""Writes: every change to Breedlab's rows goes through a function in this package.

One module per entity (runs, datasets, versions, predictions); names follow
``<entity>_<action>`` and take keyword-only arguments.
"""
