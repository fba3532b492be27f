"""The Streamlit dashboard of the gradient-dynamics lab (``streamlit run dashboard/app.py``)."""
