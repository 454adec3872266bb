"""The contest's rules: how a run is scored and judged, and the problems it asks."""
