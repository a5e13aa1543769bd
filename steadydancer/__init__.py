"""SteadyDancer: animate one photo of a person with the motion of a driving video."""

__version__ = "0.1.0"
