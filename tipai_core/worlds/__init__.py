"""Small worlds where every TiPAI stage can be trained from scratch and faithfulness has a ground truth.

``shapes``: ShapesWorld, scenes of 1–3 coloured shapes with a prompt grammar and a checker.
"""
