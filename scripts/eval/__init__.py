"""`make eval` (`python -m scripts eval`): how faithful each CAM method is at each layer set
(`faithfulness`)."""
