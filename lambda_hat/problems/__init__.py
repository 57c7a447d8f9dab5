"""Problems: specs, presets' loading, models, data, the tempered posterior, closed-form and
exact learning coefficients, sizes, and the trained optimum w*.
"""
