"""The maths of quantised training: the fake quantiser and integer codes (`quantizer`), gradient inundation
(`gi`), LARS (`lars`) and the training losses (`losses`)."""
