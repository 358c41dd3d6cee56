"""What every page shares: access rules, error pages and the API's error shape, health, template
tags. Imports Django, DRF and selectors only; no domain imports web's views except through urls.py.
"""
